"""Date and time formats that override the locale's (FORMAT_MODULE_PATH)."""
