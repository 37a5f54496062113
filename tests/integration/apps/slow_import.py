import os
import time

time.sleep(float(os.environ.get("IMPORT_SECONDS", "2")))

from basic import app  # noqa: E402,F401
