"""One screen per console section, plus the login screen and the dialogs they open."""
