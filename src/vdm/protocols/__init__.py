"""Wire formats: pure functions between client/provider protocols and the IR."""
