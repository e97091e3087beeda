"""The synthetic click/conversion logs (the embedded default data): the generative model and the writer."""
