"""Bad input of every kind a user can reach: each test names the property it holds (issue 13)."""
