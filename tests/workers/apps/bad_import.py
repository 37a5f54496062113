raise ImportError("this app cannot be imported (on purpose, for tests)")
