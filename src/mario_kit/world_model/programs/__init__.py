"""What runs a trained model: the stepping core (world_model_env.py), the play window (play.py),
the side-by-side comparison with the real game (compare.py) and the Gymnasium env (dream_env.py)."""
