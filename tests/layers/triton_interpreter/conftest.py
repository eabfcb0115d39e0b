"""The tests of this folder need a process started with TRITON_INTERPRET=1 (see their module
docstring); in any other process they are not collected."""
import os

collect_ignore_glob = [] if os.environ.get("TRITON_INTERPRET") == "1" else ["test_*.py"]
