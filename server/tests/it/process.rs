//! Runs the server binary as a child process.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// How long start-up may take before a test gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary under test.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_myelin-server"));
    // The parent's MYELIN_* settings (CI sets some) must not leak into the child.
    for (key, _) in std::env::vars() {
        if key.starts_with("MYELIN_") {
            command.env_remove(key);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

/// A running server process.
pub struct ServerProcess {
    pub child: Child,
    pub address: SocketAddr,
    pub log: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// Starts `myelin-server` with `args` on an ephemeral port and waits for
    /// the log line that says it is serving.
    pub fn start(data_dir: &Path, args: &[&str]) -> Self {
        Self::start_command(binary(), data_dir, args)
    }

    /// As [`ServerProcess::start`], with a prepared command (environment set).
    #[allow(
        clippy::zombie_processes,
        reason = "Drop kills and waits for the child"
    )]
    pub fn start_command(mut command: Command, data_dir: &Path, args: &[&str]) -> Self {
        let mut child = command
            .args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn myelin-server");
        let stderr = child.stderr.take().expect("piped stderr");
        let (lines, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            let line = log
                .recv_timeout(START_TIMEOUT)
                .expect("server logs that it is serving");
            if line.contains("serving over") {
                let address = line
                    .split_whitespace()
                    .find_map(|field| field.strip_prefix("address="))
                    .expect("address in the serving line")
                    .parse()
                    .expect("socket address");
                return Self {
                    child,
                    address,
                    log,
                };
            }
        }
    }

    /// `http://ADDRESS/_matrix/client/v3` + `path`.
    pub fn v3(&self, path: &str) -> String {
        format!("http://{}/_matrix/client/v3{path}", self.address)
    }

    /// Every log line printed until the process exits.
    pub fn remaining_log(&self) -> Vec<String> {
        self.log.iter().collect()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `myelin-server register-user` with the password on standard input.
pub fn register_user(data_dir: &Path, extra: &[&str], password: &str) -> std::process::Output {
    let mut child = binary()
        .args(["--data-dir"])
        .arg(data_dir)
        .args(["register-user"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn register-user");
    let mut stdin = child.stdin.take().expect("piped stdin");
    writeln!(stdin, "{password}").expect("write password");
    drop(stdin);
    child.wait_with_output().expect("register-user finishes")
}
