"""Sources turn the outside world into IncomingMessages; one intake writes them to the vault."""
