"""Root of the test suite. Its folder is on sys.path, so `throwaway_db` serves every test folder."""
