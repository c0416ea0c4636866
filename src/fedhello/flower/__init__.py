"""fedhello on Flower (optional extra `fedhello[flower]`): a ServerApp whose strategy wraps the
same `Server`, a ClientApp that runs the same `Client`, and launchers for Flower's
simulation and deployment engines. Nothing here is imported unless a Flower engine is used.
"""
