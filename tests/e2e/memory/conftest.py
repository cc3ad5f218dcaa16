from memhelpers import env, stack  # noqa: F401 - the package's fixtures
