"""The local stack: moto server + the real functions, provisioned from template.yaml."""
