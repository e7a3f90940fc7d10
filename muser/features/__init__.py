"""Features every application computes the same way: track features (tracks: deterministic chunks,
embedded and pooled, cached), text features and zero-shot scores (text), and text -> audio retrieval
metrics (retrieval). Eval, training's validation and the catalogue all read them from here."""
