"""The command families behind the CLI: run, undo, explain, rule tests, doctor."""
