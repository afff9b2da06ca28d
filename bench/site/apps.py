from django.apps import AppConfig


class BenchSiteConfig(AppConfig):
    name = "bench.site"
    label = "bench_site"
    verbose_name = "Benchmarks"
