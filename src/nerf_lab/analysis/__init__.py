"""What runs and sweeps say: arm statistics, curves from event files, figures, the report."""
