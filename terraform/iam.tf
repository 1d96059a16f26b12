# Instance roles, least privilege per tier:
#   - read only the SecureString parameters the tier needs (consumers: the
#     store password only), and the one release object;
#   - report only its own tier's ASG instances unhealthy (liveness);
#   - optionally, the Session Manager channel, and nothing else of SSM.
# AmazonSSMManagedInstanceCore is deliberately not attached: it grants
# ssm:GetParameter* on every parameter of the account, which would let a
# consumer read the session, ticket and admin keys.

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
  role_tier = {
    node     = "serve"
    consumer = "orders"
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

  # bigtap-liveness.timer: an instance whose bigtap cannot recover reports
  # itself unhealthy; the ASG then replaces it. Only this tier's group.
  statement {
    sid       = "ReportOwnLiveness"
    actions   = ["autoscaling:SetInstanceHealth"]
    resources = ["arn:${local.partition}:autoscaling:${var.aws_region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${var.name}-${local.role_tier[each.key]}"]
  }

  # Session Manager only: the agent registers the instance and opens the
  # session channels. These actions have no resource-level permissions.
  dynamic "statement" {
    for_each = var.enable_session_manager ? [1] : []

    content {
      sid = "SessionManagerChannel"
      actions = [
        "ssm:UpdateInstanceInformation",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
      ]
      resources = ["*"]
    }
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

resource "aws_iam_instance_profile" "instance" {
  for_each = local.role_parameters

  name = "${var.name}-${each.key}"
  role = aws_iam_role.instance[each.key].name
}
