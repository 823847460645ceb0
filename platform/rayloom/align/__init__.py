"""Alignment and safety tuning: the DPO family of preference objectives, the safety recipe (a shipped
seed set mixed into SFT, or preference pairs for DPO), their measurements and the demo stage."""
