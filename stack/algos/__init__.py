"""Training algorithms, one a file: ``ppo`` (clipped PPO), ``sac`` (soft actor-critic), ``bc`` (behaviour cloning),
sharing ``gae`` (truncation-aware advantages), ``stack.rollout`` (storage and collection) and ``stack.normalize``.

Nothing is imported here, so ``import stack.algos.gae`` stays light.
"""
