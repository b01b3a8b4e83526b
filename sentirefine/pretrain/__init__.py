"""A Korean-capable BERT made from the corpus itself: vocabulary and masked-LM pretraining."""
