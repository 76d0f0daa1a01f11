"""neurowire.clients: programs that feed, receive and watch the daemon"""
