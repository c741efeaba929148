from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [
        migrations.CreateModel(
            name="Note",
            fields=[("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                    ("text", models.CharField(max_length=100))],
        ),
    ]
