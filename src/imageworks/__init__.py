"""imageworks: fetch, check and keep track of local AI model weights."""
