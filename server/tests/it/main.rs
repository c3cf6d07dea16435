//! Tests of the `myelin-server` binary as an operator runs it: flags,
//! configuration layering, the CLI, signals and crash durability.

mod process;

mod binary;
