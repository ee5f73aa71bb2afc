"""Subcommands of the `gsv` command line, one module each (see gsv_onnx/cli.py)."""
