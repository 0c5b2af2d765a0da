"""Operations on the store and the queue that every entry point shares (CLI, and later the API)."""
