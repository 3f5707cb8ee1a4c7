"""The hash-chained audit trails, their signed checkpoints and copies sent out."""
