"""`mario-kit serve`: human play from a browser, recorded like `collect --human` (app.py: the server;
player.py: a player as a policy and the frame encoding; invites.py: tokens; static/: the page)."""
