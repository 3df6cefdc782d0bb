"""Built-in edgesdk backends, each registered through the edgesdk.backends entry-point group."""
