"""The chat page's parts: the SQLite conversation store, exports, the session controller and widgets."""
