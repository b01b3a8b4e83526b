"""The smallest config that still exercises every member: shared by tests that run the loop.

A module of its own (not conftest) because tests/faults has a conftest too, and
``from conftest import`` would then pick whichever was imported first.
"""

TINY_CONFIG = {
    "store": {"chunk_size": 150},
    "models": {
        "lexicon": {"min_count": 1},
        "lstm": {"embedding_dim": 16, "hidden_dim": 16, "epochs": 2, "max_len": 24, "vocab_size": 3000},
        "bilstm": {"embedding_dim": 16, "hidden_dim": 16, "epochs": 2, "max_len": 24, "vocab_size": 3000},
        # The shipped MiniLM (no pretraining step in every test), fine-tuned the BERT-base way.
        "bert": {"checkpoint": None, "max_train_rows": 64, "max_len": 16, "freeze_layers": 5, "batch_size": 16,
                 "lr": 5e-5, "update_lr": 3e-5, "freeze_embeddings": True},
    },
    "ensemble": {"workers": 2, "predict_batch_rows": 128},
    "refine": {"max_iterations": 2, "threshold": {"start": 0.6, "step": 0.1, "max": 0.9}},
    "logging": {"format": "json"},
}
