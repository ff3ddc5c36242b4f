"""Files: audio in and out, mel files, atomic writes, safe loading of untrusted files, figures."""
