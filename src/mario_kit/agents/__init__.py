"""RL agents that play the emulator: `ppo.py` (stable-baselines3 PPO: training, evaluation) and
`agent_file.py` (reading an agent zip without unpickling it). Collectors use an agent through
`collectors.policies.PPOPolicy`."""
