"""`jetdeploy report RUN_DIR`: one report over every run in a folder (see `build.py`)."""
