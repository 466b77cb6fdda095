"""fnplane's event sources: each turns the outside world into invocations."""
