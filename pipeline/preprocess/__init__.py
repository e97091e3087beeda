"""The preprocessing Beam job: raw IO, record validation, the split, the TF Transform graph and stats."""
