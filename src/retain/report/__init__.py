"""Tables and figures built from saved results (nothing here trains)."""
