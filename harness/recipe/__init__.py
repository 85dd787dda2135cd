"""The recipe: its schema, where its builds live, and YAML with positions."""
