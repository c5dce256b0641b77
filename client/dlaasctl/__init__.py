"""dlaasctl: the command line client of dlaasd."""
