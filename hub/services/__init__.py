"""Services: the hub's logic (auth, tokens, scopes, spawning, proxy, OAuth), below handlers."""
