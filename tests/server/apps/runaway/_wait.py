"""A blocking wait the test controls (it creates the file)."""

import os
import time


def wait_for_file(path):
    """Blocks (as a synchronous SDK call would) until ``path`` exists."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
