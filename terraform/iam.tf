# Instance roles. Each tier reads only the SecureString parameters it needs,
# and the one release object. No role can write anything.

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

locals {
  role_parameters = {
    node     = ["session-keys", "ticket-keys", "admin-key", "backend-key", "store-password"]
    consumer = ["store-password"]
  }
}

data "aws_iam_policy_document" "instance" {
  for_each = local.role_parameters

  statement {
    sid       = "ReadSecretsAtBoot"
    actions   = ["ssm:GetParameter", "ssm:GetParameters"]
    resources = [for p in each.value : "${local.ssm_arn_prefix}/${p}"]
  }

  statement {
    sid       = "FetchRelease"
    actions   = ["s3:GetObject"]
    resources = ["arn:${local.partition}:s3:::${var.artifact_bucket}/${var.artifact_key}"]
  }

  dynamic "statement" {
    for_each = var.ssm_kms_key_arn == null ? [] : [var.ssm_kms_key_arn]

    content {
      sid       = "DecryptSecrets"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["ssm.${var.aws_region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role" "instance" {
  for_each = local.role_parameters

  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "instance" {
  for_each = local.role_parameters

  name   = "${var.name}-${each.key}"
  role   = aws_iam_role.instance[each.key].id
  policy = data.aws_iam_policy_document.instance[each.key].json
}

resource "aws_iam_role_policy_attachment" "session_manager" {
  for_each = var.enable_session_manager ? local.role_parameters : {}

  role       = aws_iam_role.instance[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "instance" {
  for_each = local.role_parameters

  name = "${var.name}-${each.key}"
  role = aws_iam_role.instance[each.key].name
}
