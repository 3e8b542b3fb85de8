"""The run: its lifecycle, context, child processes, interrupts, logs, progress and hooks."""
