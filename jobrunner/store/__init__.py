"""What a run keeps on disk: state, history, env files."""
