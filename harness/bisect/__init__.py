"""harness bisect: the first upstream commit where a check turns bad."""
