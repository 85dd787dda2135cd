"""llama-server and rpc-server: command lines, draft models, processes."""
