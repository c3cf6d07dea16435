-- Guest accounts (registered with `kind=guest`, when the operator allows
-- them): limited to the endpoints the spec lists for guests until upgraded.
ALTER TABLE accounts ADD COLUMN is_guest BOOLEAN NOT NULL DEFAULT FALSE;
