"""The products, one package each. Every subpackage exports `module: AppModule`; the
registry finds them here, so installing an app is adding its package."""
