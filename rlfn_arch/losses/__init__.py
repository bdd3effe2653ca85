from .contrastive_loss import ContrastiveLoss, RandomTanhExtractor  # noqa: F401
