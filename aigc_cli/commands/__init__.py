"""What each command does once its flags are parsed: resolve, load, generate, write."""
