"""IP-IQA (Qu, Li, Gao, ICME 2024): the model, its training and Image2Prompt pretraining."""
