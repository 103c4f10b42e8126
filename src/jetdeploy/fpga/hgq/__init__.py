"""HGQ2 training: fine-tuning of a run's twin (`finetune`), the Level-1 peers (`peers`), training from scratch
(`scratch`), and the fit / select helpers they share (`fit`)."""
