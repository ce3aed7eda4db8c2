"""``python -m batchfuse.mock``: the ``mock-server`` command without the main CLI."""

from batchfuse.mock.cli import mock_server

if __name__ == "__main__":
    mock_server(prog_name="python -m batchfuse.mock")
