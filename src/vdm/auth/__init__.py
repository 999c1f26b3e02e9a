"""Who is calling: the proxy key today; virtual tokens and JWT later."""
