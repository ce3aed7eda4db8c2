"""Outputs: file names, atomic writes, image checks, PNG metadata and adoption."""
